"""What a landing zone gives every new account, for the accounts a benchmark adds to the sandbox:
AWS Config recording in each Region (Quell's Config rules need a recorder, and `quell install`
checks for one before it writes anything). The sandbox seeds its own accounts the same way."""

import boto3
from botocore.config import Config

NO_RETRIES = Config(retries={"total_max_attempts": 1})
RECORDER = "default"


def record_configuration(endpoint, admin, account, regions):
    """Turns on AWS Config recording in `account` in each of `regions`, as its administrator."""
    creds = admin.client("sts", endpoint_url=endpoint, region_name=regions[0], config=NO_RETRIES).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole", RoleSessionName="landing-zone"
    )["Credentials"]
    session = boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
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
