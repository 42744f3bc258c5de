"""The local dashboard: one server-rendered page over a stack's platform database (127.0.0.1 only)."""
