"""shoal's external secrets backend: values in AWS Secrets Manager, references in the store."""

from shoal_secrets_aws.backend import AwsSecrets
from shoal_secrets_aws.settings import AwsSettings

__all__ = ["AwsSecrets", "AwsSettings"]
