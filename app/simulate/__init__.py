"""Faithful stand-ins for the outside world, served over real HTTP on loopback.

The tests drive the controller against these; a later `simulate` command will too. Nothing in the
service imports this package.
"""
