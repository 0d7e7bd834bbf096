"""The web process: the REST API for agents, MCP, the prompt-mode callback, metrics."""
