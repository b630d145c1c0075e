"""`bigledger crm …`: the CRM's commands."""
import click


@click.group()
def crm():
    """CRM: import and export contacts and companies."""
