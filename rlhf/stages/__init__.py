"""Stages: one readable file each, setup -> train -> save."""
