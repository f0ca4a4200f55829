"""The version, in a module of its own so that any xpnet module can read it without
importing the package top (which imports nearly everything)."""
__version__ = "0.1.0"
