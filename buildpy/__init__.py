"""buildpy: Python source to a runnable container image, the S2I way, on Podman."""

__version__ = "0.1.0"
