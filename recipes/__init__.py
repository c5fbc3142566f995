"""Recipe scripts (``genre.py``, ``piano.py``) and their YAML configs (``configs/*.yaml``).

A package only so that the configs ship with an installed library: read one with
``importlib.resources.files("recipes") / "configs" / "demo.yaml"``. Importing it imports nothing else.
"""
