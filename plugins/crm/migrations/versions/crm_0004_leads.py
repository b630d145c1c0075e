"""CRM: leads with their facts, scoring rule sets, web forms, assignment (rules, rep settings, round robin),
duplicate candidates and channel costs.

Revision ID: crm_0004
Revises: crm_0003
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "crm_0004"
down_revision = "crm_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('crm_lead_form',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('slug', sa.String(length=100), nullable=False),
        sa.Column('title', sa.String(length=200), nullable=True),
        sa.Column('title_en', sa.String(length=200), nullable=True),
        sa.Column('fields', sa.JSON(), nullable=False),
        sa.Column('consent_required', sa.Boolean(), nullable=False),
        sa.Column('consent_text', sa.Text(), nullable=True),
        sa.Column('consent_text_en', sa.Text(), nullable=True),
        sa.Column('thank_you', sa.Text(), nullable=True),
        sa.Column('thank_you_en', sa.Text(), nullable=True),
        sa.Column('redirect_url', sa.String(length=1000), nullable=True),
        sa.Column('team_id', sa.Integer(), nullable=True),
        sa.Column('channel', sa.String(length=100), nullable=True),
        sa.Column('campaign', sa.String(length=200), nullable=True),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['team_id'], ['bl_team.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('slug')
        )
    op.create_index(op.f('ix_crm_lead_form_team_id'), 'crm_lead_form', ['team_id'], unique=False)
    op.create_table('crm_lead',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('title', sa.String(length=200), nullable=True),
        sa.Column('company_name', sa.String(length=200), nullable=True),
        sa.Column('company_size', sa.Integer(), nullable=True),
        sa.Column('industry', sa.String(length=100), nullable=True),
        sa.Column('website', sa.String(length=300), nullable=True),
        sa.Column('email', sa.String(length=320), nullable=True),
        sa.Column('phone', sa.String(length=50), nullable=True),
        sa.Column('phone_e164', sa.String(length=20), nullable=True),
        sa.Column('country', sa.String(length=100), nullable=True),
        sa.Column('city', sa.String(length=100), nullable=True),
        sa.Column('address', sa.String(length=300), nullable=True),
        sa.Column('language', sa.String(length=10), nullable=True),
        sa.Column('message', sa.Text(), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('score', sa.Integer(), nullable=False),
        sa.Column('rule_set_version', sa.Integer(), nullable=True),
        sa.Column('qualified_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('email_opens', sa.Integer(), nullable=False),
        sa.Column('email_clicks', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=20), nullable=False),
        sa.Column('channel', sa.String(length=100), nullable=True),
        sa.Column('campaign', sa.String(length=200), nullable=True),
        sa.Column('utm_source', sa.String(length=200), nullable=True),
        sa.Column('utm_medium', sa.String(length=200), nullable=True),
        sa.Column('utm_campaign', sa.String(length=200), nullable=True),
        sa.Column('utm_term', sa.String(length=200), nullable=True),
        sa.Column('utm_content', sa.String(length=200), nullable=True),
        sa.Column('referrer', sa.String(length=1000), nullable=True),
        sa.Column('consent', sa.Boolean(), nullable=False),
        sa.Column('consent_text', sa.Text(), nullable=True),
        sa.Column('consent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('disqualify_reason', sa.String(length=500), nullable=True),
        sa.Column('converted_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('conversion', sa.JSON(), nullable=False),
        sa.Column('form_id', sa.Integer(), nullable=True),
        sa.Column('contact_id', sa.Integer(), nullable=True),
        sa.Column('company_id', sa.Integer(), nullable=True),
        sa.Column('deal_id', sa.Integer(), nullable=True),
        sa.Column('idempotency_key', sa.String(length=200), nullable=True),
        sa.Column('search_text', sa.Text(), nullable=False),
        sa.Column('custom', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('owner_id', sa.Integer(), nullable=True),
        sa.Column('team_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['company_id'], ['crm_company.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['contact_id'], ['crm_contact.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['deal_id'], ['crm_deal.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['form_id'], ['crm_lead_form.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['owner_id'], ['ab_user.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['team_id'], ['bl_team.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('idempotency_key')
        )
    op.create_index(op.f('ix_crm_lead_campaign'), 'crm_lead', ['campaign'], unique=False)
    op.create_index('ix_crm_lead_channel_created', 'crm_lead', ['channel', 'created_at'], unique=False)
    op.create_index(op.f('ix_crm_lead_company_id'), 'crm_lead', ['company_id'], unique=False)
    op.create_index(op.f('ix_crm_lead_contact_id'), 'crm_lead', ['contact_id'], unique=False)
    op.create_index(op.f('ix_crm_lead_created_at'), 'crm_lead', ['created_at'], unique=False)
    op.create_index(op.f('ix_crm_lead_deal_id'), 'crm_lead', ['deal_id'], unique=False)
    op.create_index(op.f('ix_crm_lead_email'), 'crm_lead', ['email'], unique=False)
    op.create_index(op.f('ix_crm_lead_form_id'), 'crm_lead', ['form_id'], unique=False)
    op.create_index(op.f('ix_crm_lead_industry'), 'crm_lead', ['industry'], unique=False)
    op.create_index(op.f('ix_crm_lead_owner_id'), 'crm_lead', ['owner_id'], unique=False)
    op.create_index(op.f('ix_crm_lead_phone_e164'), 'crm_lead', ['phone_e164'], unique=False)
    op.create_index(op.f('ix_crm_lead_source'), 'crm_lead', ['source'], unique=False)
    op.create_index('ix_crm_lead_status', 'crm_lead', ['status'], unique=False)
    op.create_index('ix_crm_lead_company_name_lower', 'crm_lead', [sa.text('lower(company_name)')], unique=False)
    if op.get_bind().dialect.name == "postgresql":  # the duplicate check's name lookup; custom-field filters
        op.create_index("ix_crm_lead_search_trgm", "crm_lead", ["search_text"], postgresql_using="gin",
                        postgresql_ops={"search_text": "gin_trgm_ops"})
        op.create_index("ix_crm_lead_custom_gin", "crm_lead", ["custom"], postgresql_using="gin")
    op.create_index(op.f('ix_crm_lead_team_id'), 'crm_lead', ['team_id'], unique=False)
    op.create_table('crm_lead_fact',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('lead_id', sa.Integer(), nullable=False),
        sa.Column('fact', sa.String(length=100), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=50), nullable=True),
        sa.Column('first_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['lead_id'], ['crm_lead.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('lead_id', 'fact', name='uq_crm_lead_fact')
        )
    op.create_index('ix_crm_lead_fact_fact', 'crm_lead_fact', ['fact', 'lead_id'], unique=False)
    op.create_table('crm_scoring_rule_set',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('document', sa.JSON(), nullable=False),
        sa.Column('threshold', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.Column('rescored_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('rescored_count', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['created_by_id'], ['ab_user.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('version')
        )
    op.create_table('crm_lead_assignment',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('lead_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('team_id', sa.Integer(), nullable=True),
        sa.Column('reason', sa.String(length=300), nullable=False),
        sa.Column('by_id', sa.Integer(), nullable=True),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['by_id'], ['ab_user.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['lead_id'], ['crm_lead.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['team_id'], ['bl_team.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['user_id'], ['ab_user.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id')
        )
    op.create_index('ix_crm_lead_assignment_lead', 'crm_lead_assignment', ['lead_id', 'at'], unique=False)
    op.create_index(op.f('ix_crm_lead_assignment_user_id'), 'crm_lead_assignment', ['user_id'], unique=False)
    op.create_table('crm_channel_cost',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('channel', sa.String(length=100), nullable=False),
        sa.Column('campaign', sa.String(length=200), nullable=False),
        sa.Column('period_start', sa.Date(), nullable=False),
        sa.Column('period_end', sa.Date(), nullable=False),
        sa.Column('amount', sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('channel', 'campaign', 'period_start', name='uq_crm_channel_cost')
        )
    op.create_table('crm_form_token',
        sa.Column('nonce', sa.String(length=64), nullable=False),
        sa.Column('form_id', sa.Integer(), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['form_id'], ['crm_lead_form.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('nonce')
        )
    op.create_index(op.f('ix_crm_form_token_form_id'), 'crm_form_token', ['form_id'], unique=False)
    op.create_index(op.f('ix_crm_form_token_used_at'), 'crm_form_token', ['used_at'], unique=False)
    op.create_table('crm_rep_setting',
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('weight', sa.Integer(), nullable=False),
        sa.Column('max_open_leads', sa.Integer(), nullable=True),
        sa.Column('available', sa.Boolean(), nullable=False),
        sa.Column('away_until', sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['ab_user.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id')
        )
    op.create_table('crm_assignment_rule',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('criterion', sa.Text(), nullable=False),
        sa.Column('team_id', sa.Integer(), nullable=True),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['team_id'], ['bl_team.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['ab_user.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id')
        )
    op.create_index(op.f('ix_crm_assignment_rule_team_id'), 'crm_assignment_rule', ['team_id'], unique=False)
    op.create_index(op.f('ix_crm_assignment_rule_user_id'), 'crm_assignment_rule', ['user_id'], unique=False)
    op.create_table('crm_round_robin',
        sa.Column('team_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('last_user_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['last_user_id'], ['ab_user.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['team_id'], ['bl_team.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('team_id')
        )
    op.create_table('crm_duplicate_candidate',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind_a', sa.String(length=10), nullable=False),
        sa.Column('id_a', sa.Integer(), nullable=False),
        sa.Column('kind_b', sa.String(length=10), nullable=False),
        sa.Column('id_b', sa.Integer(), nullable=False),
        sa.Column('score', sa.Numeric(precision=6, scale=4), nullable=False),
        sa.Column('reasons', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('found_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('decided_by_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['decided_by_id'], ['ab_user.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('kind_a', 'id_a', 'kind_b', 'id_b', name='uq_crm_duplicate_pair')
        )
    op.create_index('ix_crm_duplicate_status', 'crm_duplicate_candidate', ['status', 'score'], unique=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_crm_lead_custom_gin", table_name="crm_lead")
        op.drop_index("ix_crm_lead_search_trgm", table_name="crm_lead")
    for table in ("crm_duplicate_candidate", "crm_round_robin", "crm_assignment_rule", "crm_rep_setting", "crm_form_token", "crm_channel_cost", "crm_lead_assignment", "crm_scoring_rule_set", "crm_lead_fact", "crm_lead", "crm_lead_form"):
        op.drop_table(table)
