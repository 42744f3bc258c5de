"""The azure provider's runtime: Azure Machine Learning through azure-ai-ml and the Azure management SDKs."""
