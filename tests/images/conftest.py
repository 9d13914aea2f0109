from images.fixtures import podman  # noqa: F401
