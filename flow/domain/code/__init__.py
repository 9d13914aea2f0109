"""Code snapshots: which files a task uploads (.flowignore) and the manifest naming them."""
