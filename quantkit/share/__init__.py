"""Sharing a ladder: the report and its tables, the Hub model card, push, Ollama Modelfiles."""
