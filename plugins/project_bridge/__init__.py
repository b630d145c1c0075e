"""BigLedger Project bridge: a bridge between the CRM and the ERP module, through hooks only."""
