"""Blob lifetimes: the one owner that decides when stored bytes may go (see service.py)."""
