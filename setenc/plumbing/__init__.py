"""Plumbing every stage shares: one error type per kind of user mistake (`errors`), the name -> factory registries
(`registry`), one-line CLI errors with exit status 2 (`cli`), content hashes and atomic writes (`paths`)."""
