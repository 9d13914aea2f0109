"""Code that runs inside tasks (stdlib only): the function runner of .remote() and invoke()."""
