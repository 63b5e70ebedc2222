"""Acknowledging an incident, in one place.

- service: `acknowledge_incident`, the one function every path calls (the signed link,
  `firebreak ack`, the `acknowledge-incident` flow in the Prefect UI, a monitor's
  acknowledge through the intake);
- links: the signed, expiring acknowledgement links put into pages;
- http: the FastAPI router that serves those links (GET shows, POST acknowledges).

The rows themselves are stored by records.acknowledgements.
"""
