"""Loaded, reusable models: a network, its tokenizer and config, behind task methods."""
