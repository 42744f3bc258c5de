"""The gcp provider's runtime: Vertex AI, Cloud Monitoring and BigQuery clients behind the capability contracts."""
