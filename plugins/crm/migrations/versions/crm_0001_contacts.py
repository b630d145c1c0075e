"""CRM: companies, contacts, their details, tags, custom fields, activities, documents, segments, audit.

Revision ID: crm_0001
Revises:
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "crm_0001"
down_revision = None
branch_labels = ("crm",)
depends_on = "core_0001"


def upgrade() -> None:
    op.create_table('crm_contact_role',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=50), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('name_en', sa.String(length=100), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    op.create_table('crm_custom_field',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('entity', sa.String(length=20), nullable=False),
    sa.Column('key', sa.String(length=60), nullable=False),
    sa.Column('label', sa.String(length=100), nullable=False),
    sa.Column('label_en', sa.String(length=100), nullable=True),
    sa.Column('type', sa.String(length=20), nullable=False),
    sa.Column('required', sa.Boolean(), nullable=False),
    sa.Column('pattern', sa.String(length=300), nullable=True),
    sa.Column('options', sa.JSON(), nullable=True),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('entity', 'key', name='uq_crm_custom_field_entity_key')
    )
    op.create_table('crm_tag',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('color', sa.String(length=7), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('crm_audit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('entity', sa.String(length=50), nullable=False),
    sa.Column('record_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=20), nullable=False),
    sa.Column('changes', sa.JSON(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['ab_user.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_crm_audit_at'), 'crm_audit', ['at'], unique=False)
    op.create_index('ix_crm_audit_record', 'crm_audit', ['entity', 'record_id'], unique=False)
    op.create_index(op.f('ix_crm_audit_user_id'), 'crm_audit', ['user_id'], unique=False)
    op.create_table('crm_company',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('name_en', sa.String(length=200), nullable=True),
    sa.Column('legal_name', sa.String(length=300), nullable=True),
    sa.Column('industry', sa.String(length=100), nullable=True),
    sa.Column('employees', sa.Integer(), nullable=True),
    sa.Column('region', sa.String(length=100), nullable=True),
    sa.Column('website', sa.String(length=300), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('merged_into_id', sa.Integer(), nullable=True),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('team_id', sa.Integer(), nullable=True),
    sa.Column('external_id', sa.String(length=100), nullable=True),
    sa.Column('custom', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('search_text', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint('parent_id IS NULL OR parent_id <> id', name='ck_crm_company_not_own_parent'),
    sa.ForeignKeyConstraint(['merged_into_id'], ['crm_company.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['owner_id'], ['ab_user.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['parent_id'], ['crm_company.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['team_id'], ['bl_team.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('external_id')
    )
    op.create_index(op.f('ix_crm_company_industry'), 'crm_company', ['industry'], unique=False)
    op.create_index(op.f('ix_crm_company_merged_into_id'), 'crm_company', ['merged_into_id'], unique=False)
    op.create_index('ix_crm_company_name', 'crm_company', ['name'], unique=False)
    op.create_index(op.f('ix_crm_company_owner_id'), 'crm_company', ['owner_id'], unique=False)
    op.create_index(op.f('ix_crm_company_parent_id'), 'crm_company', ['parent_id'], unique=False)
    op.create_index(op.f('ix_crm_company_region'), 'crm_company', ['region'], unique=False)
    op.create_index(op.f('ix_crm_company_status'), 'crm_company', ['status'], unique=False)
    op.create_index(op.f('ix_crm_company_team_id'), 'crm_company', ['team_id'], unique=False)
    op.create_table('crm_contact',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('full_name', sa.String(length=200), nullable=False),
    sa.Column('family_name', sa.String(length=100), nullable=True),
    sa.Column('given_name', sa.String(length=100), nullable=True),
    sa.Column('name_en', sa.String(length=200), nullable=True),
    sa.Column('title', sa.String(length=200), nullable=True),
    sa.Column('merged_into_id', sa.Integer(), nullable=True),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('team_id', sa.Integer(), nullable=True),
    sa.Column('external_id', sa.String(length=100), nullable=True),
    sa.Column('custom', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('search_text', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['merged_into_id'], ['crm_contact.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['owner_id'], ['ab_user.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['team_id'], ['bl_team.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('external_id')
    )
    op.create_index('ix_crm_contact_full_name', 'crm_contact', ['full_name'], unique=False)
    op.create_index(op.f('ix_crm_contact_merged_into_id'), 'crm_contact', ['merged_into_id'], unique=False)
    op.create_index(op.f('ix_crm_contact_owner_id'), 'crm_contact', ['owner_id'], unique=False)
    op.create_index(op.f('ix_crm_contact_team_id'), 'crm_contact', ['team_id'], unique=False)
    op.create_table('crm_segment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('entity', sa.String(length=20), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('team_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['owner_id'], ['ab_user.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['team_id'], ['bl_team.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_index(op.f('ix_crm_segment_owner_id'), 'crm_segment', ['owner_id'], unique=False)
    op.create_index(op.f('ix_crm_segment_team_id'), 'crm_segment', ['team_id'], unique=False)
    op.create_table('crm_activity',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('body', sa.Text(), nullable=True),
    sa.Column('outcome', sa.String(length=200), nullable=True),
    sa.Column('duration_minutes', sa.Integer(), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('done', sa.Boolean(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=True),
    sa.Column('company_id', sa.Integer(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.CheckConstraint('contact_id IS NOT NULL OR company_id IS NOT NULL', name='ck_crm_activity_has_customer'),
    sa.ForeignKeyConstraint(['company_id'], ['crm_company.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['contact_id'], ['crm_contact.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['ab_user.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_crm_activity_company_time', 'crm_activity', ['company_id', 'occurred_at'], unique=False)
    op.create_index('ix_crm_activity_contact_time', 'crm_activity', ['contact_id', 'occurred_at'], unique=False)
    op.create_index(op.f('ix_crm_activity_kind'), 'crm_activity', ['kind'], unique=False)
    op.create_index(op.f('ix_crm_activity_user_id'), 'crm_activity', ['user_id'], unique=False)
    op.create_table('crm_address',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=True),
    sa.Column('company_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('province', sa.String(length=100), nullable=True),
    sa.Column('city', sa.String(length=100), nullable=True),
    sa.Column('district', sa.String(length=100), nullable=True),
    sa.Column('street', sa.String(length=300), nullable=True),
    sa.Column('postcode', sa.String(length=20), nullable=True),
    sa.Column('is_primary', sa.Boolean(), nullable=False),
    sa.CheckConstraint('(contact_id IS NULL) <> (company_id IS NULL)', name='ck_crm_address_one_owner'),
    sa.ForeignKeyConstraint(['company_id'], ['crm_company.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['contact_id'], ['crm_contact.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_crm_address_city'), 'crm_address', ['city'], unique=False)
    op.create_index(op.f('ix_crm_address_company_id'), 'crm_address', ['company_id'], unique=False)
    op.create_index(op.f('ix_crm_address_contact_id'), 'crm_address', ['contact_id'], unique=False)
    op.create_table('crm_company_tag',
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('tag_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['company_id'], ['crm_company.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tag_id'], ['crm_tag.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('company_id', 'tag_id')
    )
    op.create_index(op.f('ix_crm_company_tag_tag_id'), 'crm_company_tag', ['tag_id'], unique=False)
    op.create_table('crm_contact_company',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('role_id', sa.Integer(), nullable=True),
    sa.Column('is_primary', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['company_id'], ['crm_company.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['contact_id'], ['crm_contact.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['role_id'], ['crm_contact_role.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('contact_id', 'company_id', name='uq_crm_contact_company')
    )
    op.create_index(op.f('ix_crm_contact_company_company_id'), 'crm_contact_company', ['company_id'], unique=False)
    op.create_index(op.f('ix_crm_contact_company_contact_id'), 'crm_contact_company', ['contact_id'], unique=False)
    op.create_index(op.f('ix_crm_contact_company_role_id'), 'crm_contact_company', ['role_id'], unique=False)
    op.create_table('crm_contact_tag',
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('tag_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['crm_contact.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tag_id'], ['crm_tag.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('contact_id', 'tag_id')
    )
    op.create_index(op.f('ix_crm_contact_tag_tag_id'), 'crm_contact_tag', ['tag_id'], unique=False)
    op.create_table('crm_document',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=True),
    sa.Column('company_id', sa.Integer(), nullable=True),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('content_type', sa.String(length=255), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('uploaded_by_id', sa.Integer(), nullable=True),
    sa.Column('uploaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(contact_id IS NULL) <> (company_id IS NULL)', name='ck_crm_document_one_owner'),
    sa.ForeignKeyConstraint(['company_id'], ['crm_company.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['contact_id'], ['crm_contact.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['uploaded_by_id'], ['ab_user.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_crm_document_company_id'), 'crm_document', ['company_id'], unique=False)
    op.create_index(op.f('ix_crm_document_contact_id'), 'crm_document', ['contact_id'], unique=False)
    op.create_index(op.f('ix_crm_document_sha256'), 'crm_document', ['sha256'], unique=False)
    op.create_table('crm_email',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=True),
    sa.Column('company_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('is_primary', sa.Boolean(), nullable=False),
    sa.CheckConstraint('(contact_id IS NULL) <> (company_id IS NULL)', name='ck_crm_email_one_owner'),
    sa.ForeignKeyConstraint(['company_id'], ['crm_company.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['contact_id'], ['crm_contact.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_crm_email_address'), 'crm_email', ['address'], unique=False)
    op.create_index(op.f('ix_crm_email_company_id'), 'crm_email', ['company_id'], unique=False)
    op.create_index(op.f('ix_crm_email_contact_id'), 'crm_email', ['contact_id'], unique=False)
    op.create_table('crm_phone',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=True),
    sa.Column('company_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('raw', sa.String(length=50), nullable=False),
    sa.Column('e164', sa.String(length=20), nullable=True),
    sa.Column('is_primary', sa.Boolean(), nullable=False),
    sa.CheckConstraint('(contact_id IS NULL) <> (company_id IS NULL)', name='ck_crm_phone_one_owner'),
    sa.ForeignKeyConstraint(['company_id'], ['crm_company.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['contact_id'], ['crm_contact.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_crm_phone_company_id'), 'crm_phone', ['company_id'], unique=False)
    op.create_index(op.f('ix_crm_phone_contact_id'), 'crm_phone', ['contact_id'], unique=False)
    op.create_index(op.f('ix_crm_phone_e164'), 'crm_phone', ['e164'], unique=False)
    op.bulk_insert(sa.table("crm_contact_role", sa.column("code"), sa.column("name"), sa.column("name_en")), [
        {"code": "decision_maker", "name": "决策者", "name_en": "Decision maker"},
        {"code": "influencer", "name": "影响者", "name_en": "Influencer"},
        {"code": "user", "name": "用户", "name_en": "User"},
    ])
    if op.get_bind().dialect.name == "postgresql":
        # trigram search on names and pinyin; containment queries on custom fields
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for table in ("crm_contact", "crm_company"):
            op.create_index(f"ix_{table}_search_trgm", table, ["search_text"], postgresql_using="gin",
                            postgresql_ops={"search_text": "gin_trgm_ops"})
            op.create_index(f"ix_{table}_custom_gin", table, ["custom"], postgresql_using="gin")
        op.create_index("ix_crm_email_address_trgm", "crm_email", ["address"], postgresql_using="gin",
                        postgresql_ops={"address": "gin_trgm_ops"})


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_crm_email_address_trgm", table_name="crm_email")
        for table in ("crm_contact", "crm_company"):
            op.drop_index(f"ix_{table}_custom_gin", table_name=table)
            op.drop_index(f"ix_{table}_search_trgm", table_name=table)

    op.drop_index(op.f('ix_crm_phone_e164'), table_name='crm_phone')
    op.drop_index(op.f('ix_crm_phone_contact_id'), table_name='crm_phone')
    op.drop_index(op.f('ix_crm_phone_company_id'), table_name='crm_phone')
    op.drop_table('crm_phone')
    op.drop_index(op.f('ix_crm_email_contact_id'), table_name='crm_email')
    op.drop_index(op.f('ix_crm_email_company_id'), table_name='crm_email')
    op.drop_index(op.f('ix_crm_email_address'), table_name='crm_email')
    op.drop_table('crm_email')
    op.drop_index(op.f('ix_crm_document_sha256'), table_name='crm_document')
    op.drop_index(op.f('ix_crm_document_contact_id'), table_name='crm_document')
    op.drop_index(op.f('ix_crm_document_company_id'), table_name='crm_document')
    op.drop_table('crm_document')
    op.drop_index(op.f('ix_crm_contact_tag_tag_id'), table_name='crm_contact_tag')
    op.drop_table('crm_contact_tag')
    op.drop_index(op.f('ix_crm_contact_company_role_id'), table_name='crm_contact_company')
    op.drop_index(op.f('ix_crm_contact_company_contact_id'), table_name='crm_contact_company')
    op.drop_index(op.f('ix_crm_contact_company_company_id'), table_name='crm_contact_company')
    op.drop_table('crm_contact_company')
    op.drop_index(op.f('ix_crm_company_tag_tag_id'), table_name='crm_company_tag')
    op.drop_table('crm_company_tag')
    op.drop_index(op.f('ix_crm_address_contact_id'), table_name='crm_address')
    op.drop_index(op.f('ix_crm_address_company_id'), table_name='crm_address')
    op.drop_index(op.f('ix_crm_address_city'), table_name='crm_address')
    op.drop_table('crm_address')
    op.drop_index(op.f('ix_crm_activity_user_id'), table_name='crm_activity')
    op.drop_index(op.f('ix_crm_activity_kind'), table_name='crm_activity')
    op.drop_index('ix_crm_activity_contact_time', table_name='crm_activity')
    op.drop_index('ix_crm_activity_company_time', table_name='crm_activity')
    op.drop_table('crm_activity')
    op.drop_index(op.f('ix_crm_segment_team_id'), table_name='crm_segment')
    op.drop_index(op.f('ix_crm_segment_owner_id'), table_name='crm_segment')
    op.drop_table('crm_segment')
    op.drop_index(op.f('ix_crm_contact_team_id'), table_name='crm_contact')
    op.drop_index(op.f('ix_crm_contact_owner_id'), table_name='crm_contact')
    op.drop_index(op.f('ix_crm_contact_merged_into_id'), table_name='crm_contact')
    op.drop_index('ix_crm_contact_full_name', table_name='crm_contact')
    op.drop_table('crm_contact')
    op.drop_index(op.f('ix_crm_company_team_id'), table_name='crm_company')
    op.drop_index(op.f('ix_crm_company_status'), table_name='crm_company')
    op.drop_index(op.f('ix_crm_company_region'), table_name='crm_company')
    op.drop_index(op.f('ix_crm_company_parent_id'), table_name='crm_company')
    op.drop_index(op.f('ix_crm_company_owner_id'), table_name='crm_company')
    op.drop_index('ix_crm_company_name', table_name='crm_company')
    op.drop_index(op.f('ix_crm_company_merged_into_id'), table_name='crm_company')
    op.drop_index(op.f('ix_crm_company_industry'), table_name='crm_company')
    op.drop_table('crm_company')
    op.drop_index(op.f('ix_crm_audit_user_id'), table_name='crm_audit')
    op.drop_index('ix_crm_audit_record', table_name='crm_audit')
    op.drop_index(op.f('ix_crm_audit_at'), table_name='crm_audit')
    op.drop_table('crm_audit')
    op.drop_table('crm_tag')
    op.drop_table('crm_custom_field')
    op.drop_table('crm_contact_role')
