"""Entry point ``aws`` in ``shoal.secrets``: builds the AWS Secrets Manager provider."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from shoal_secrets_aws.backend import AwsSecrets
from shoal_secrets_aws.settings import AwsSettings

#: Read by ``shoal plugin ls`` for the role and API version, without building a provider.
PROVIDER_CLASS = AwsSecrets


@hookimpl
def shoal_secrets_provider(context: PluginContext) -> AwsSecrets:
    """Options: ``--plugin-opt secrets.aws.KEY=VALUE`` with KEY one of region, endpoint-url,
    ca-bundle, timeout, profile, allow-http, name-prefix (see ``settings.py``)."""
    return AwsSecrets(AwsSettings.from_options(context.options))
