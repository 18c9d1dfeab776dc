"""ModelPress: the API side, the job contract and the client."""

from importlib import metadata

try:
    # The one version: pyproject.toml's, as installed (editable installs included).
    __version__ = metadata.version("modelpress")
except metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
