"""Tests of the client agent (agent/). A package so its helper modules import by relative name."""
