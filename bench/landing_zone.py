"""What a landing zone gives every new account, for the accounts a benchmark adds to the sandbox:
AWS Config recording in each Region (Quell's Config rules need a recorder, and `quell install`
checks for one before it writes anything). The sandbox seeds its own accounts the same way."""

from botocore.config import Config

from sandbox_accounts import account_session

NO_RETRIES = Config(retries={"total_max_attempts": 1})
RECORDER = "default"


def record_configuration(endpoint, admin, account, regions):
    """Turns on AWS Config recording in `account` in each of `regions`, as its administrator."""
    session = account_session(endpoint, admin, account, regions[0])
    for region in regions:
        config = session.client("config", region_name=region, endpoint_url=endpoint, config=NO_RETRIES)
        config.put_configuration_recorder(
            ConfigurationRecorder={
                "name": RECORDER,
                "roleARN": f"arn:aws:iam::{account}:role/aws-service-role/config.amazonaws.com/AWSServiceRoleForConfig",
            }
        )
        config.put_delivery_channel(DeliveryChannel={"name": RECORDER, "s3BucketName": f"config-{account}-{region}"})
        config.start_configuration_recorder(ConfigurationRecorderName=RECORDER)
