"""Load-test service: a Locust user (``locustfile.py``) streaming the study's prompts."""
