"""Files on disk: safe weights reading, atomic writes, run-directory locks, checked JSON, the .npz format."""
