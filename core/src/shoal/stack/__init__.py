"""``shoal stack``: Compose files turned into swarm services, networks, secrets and configs.

``compose`` reads and checks the files (``interpolate`` fills ``${VAR}`` first); ``convert``
maps each service to ``service create``'s options, so the managers build and check the specs
exactly as they do for ``service create``.
"""
