"""Built-in organ plugins.

Each module here is registered through the ``physiotwin`` entry-point group in
pyproject.toml, exactly like a third-party plugin, and reads like its paper.

- `physiotwin.organs.glucose`: UVA/Padova glucose-insulin model (Dalla Man 2007; T1D simulator).
- `physiotwin.organs.pancreas`: beta-cell insulin secretion (Dalla Man 2007) for non-T1D subjects.
"""
