"""Clients of the HTTP service: the Python client, the ``sitetune`` command line and the
DIMSE bridge (C-STORE in, STOW-RS out). They talk to the service over HTTP only.
"""
