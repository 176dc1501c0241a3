"""The version of rngvault, in a module of its own so that the server can name it without
importing the client (``import rngvault`` loads the Vault and the client stores on use)."""

__version__ = "0.1.0"
