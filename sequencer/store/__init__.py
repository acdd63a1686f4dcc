"""Persistence through tortoise-orm: SQLite by default, PostgreSQL by URL."""
