"""Qt-free core: document, geometry, image I/O and pixel operations."""
