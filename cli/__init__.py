"""The operators' command line: ``mfa-gate``."""
