"""Wrappers overriding one thing each: ``gymnasium``, ``pettingzoo`` and ``sb3`` (see each module)."""
