"""The ``kposture`` command: the services, the local environment and the operator tools."""
