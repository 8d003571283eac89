"""Migrations: status, upgrade, lock, lint, backup."""
