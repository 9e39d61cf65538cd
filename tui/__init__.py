"""The operators' Textual app. It talks only to the ops API over HTTP.

Not built yet: the layout reserves its place (see DESIGN.md); the `parlo` CLI is the operator's
tool until then.
"""
