"""Weight files: formats, key layouts, conversion from other projects' files, and weights that registry packages ship."""
