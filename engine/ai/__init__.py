"""The AI assistant: providers, routing, the knowledge base and the answer pipeline (issue 6)."""
