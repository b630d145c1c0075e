"""BigLedger CRM: contacts, leads, pipeline, nurturing, service. Loaded as the module `crm`."""
