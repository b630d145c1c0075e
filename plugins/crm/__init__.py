"""The CRM module: contacts and companies, leads, pipeline, marketing and service."""
