"""retention-worker: archive a processing API's outputs to your own S3 bucket, then delete them."""

__version__ = "0.1.0"
