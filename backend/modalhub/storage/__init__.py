"""Storage protocols and their implementations (embedded default: SQLite + local directory)."""
