"""Pixels and faces: image reading, face geometry, landmarks, the bundled face photos."""
