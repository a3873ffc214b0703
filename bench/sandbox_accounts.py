"""A session in one of the sandbox organization's accounts, as its administrator: the role
Organizations creates in every member account, assumed from the sandbox's admin user."""

import boto3


def account_session(endpoint, admin, account, region=None):
    creds = admin.client("sts", endpoint_url=endpoint, region_name=region or "us-east-1").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole", RoleSessionName="bench"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=region,
    )
