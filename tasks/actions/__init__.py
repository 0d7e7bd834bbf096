"""Built-in actions. Importing a module here registers its handler."""
