"""Pieces the CRM's areas share: plain domain logic with no Flask or Flask-AppBuilder imports."""
