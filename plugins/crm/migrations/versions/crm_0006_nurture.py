"""CRM: nurturing — e-mail templates, sequences and their steps, enrollments, step runs (at most one per
enrollment and step), the suppression list and consent records; leads get a time zone.

Revision ID: crm_0006
Revises: crm_0005
"""
import sqlalchemy as sa
from alembic import op

revision = "crm_0006"
down_revision = "crm_0005"
branch_labels = None
depends_on = "core_0002"  # step runs point at bl_message

# SQLite's reflection misses the ON DELETE of foreign keys written inside a column (crm_0003): restate them,
# or the table rebuilt on SQLite would lose them
_ACTIVITY_FKS = [sa.Column('deal_id', sa.Integer(), sa.ForeignKey('crm_deal.id', ondelete='CASCADE')),
                 sa.Column('stage_id', sa.Integer(), sa.ForeignKey('crm_stage.id', ondelete='SET NULL'))]


def upgrade() -> None:
    op.create_table('crm_email_template',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('subject_zh', sa.String(length=300), nullable=True),
    sa.Column('html_zh', sa.Text(), nullable=True),
    sa.Column('subject_en', sa.String(length=300), nullable=True),
    sa.Column('html_en', sa.Text(), nullable=True),
    sa.Column('marketing', sa.Boolean(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('crm_sequence',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('enroll_rule', sa.Text(), nullable=True),
    sa.Column('enroll_form_id', sa.Integer(), nullable=True),
    sa.Column('exit_on_qualified', sa.Boolean(), nullable=False),
    sa.Column('exit_on_converted', sa.Boolean(), nullable=False),
    sa.Column('quiet_start', sa.String(length=5), nullable=True),
    sa.Column('quiet_end', sa.String(length=5), nullable=True),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['ab_user.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['enroll_form_id'], ['crm_lead_form.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_index(op.f('ix_crm_sequence_enroll_form_id'), 'crm_sequence', ['enroll_form_id'], unique=False)
    op.create_table('crm_sequence_step',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sequence_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('template_id', sa.Integer(), nullable=True),
    sa.Column('days', sa.Integer(), nullable=True),
    sa.Column('business_days', sa.Boolean(), nullable=False),
    sa.Column('condition', sa.Text(), nullable=True),
    sa.Column('then_step_id', sa.Integer(), nullable=True),
    sa.Column('else_step_id', sa.Integer(), nullable=True),
    sa.Column('subject', sa.String(length=300), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=True),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('target_sequence_id', sa.Integer(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['else_step_id'], ['crm_sequence_step.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['owner_id'], ['ab_user.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['sequence_id'], ['crm_sequence.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['target_sequence_id'], ['crm_sequence.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['template_id'], ['crm_email_template.id'], ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['then_step_id'], ['crm_sequence_step.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_crm_sequence_step_sequence', 'crm_sequence_step', ['sequence_id', 'position'], unique=False)
    op.create_index(op.f('ix_crm_sequence_step_template_id'), 'crm_sequence_step', ['template_id'], unique=False)
    op.create_table('crm_consent_record',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('address_hash', sa.String(length=64), nullable=True),
    sa.Column('lead_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=20), nullable=False),
    sa.Column('source', sa.String(length=100), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['lead_id'], ['crm_lead.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_crm_consent_record_address', 'crm_consent_record', ['address_hash', 'at'], unique=False)
    op.create_index(op.f('ix_crm_consent_record_lead_id'), 'crm_consent_record', ['lead_id'], unique=False)
    op.create_table('crm_enrollment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sequence_id', sa.Integer(), nullable=False),
    sa.Column('lead_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('step_id', sa.Integer(), nullable=True),
    sa.Column('next_run_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('enrolled_by_id', sa.Integer(), nullable=True),
    sa.Column('enrolled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('exit_reason', sa.String(length=30), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['enrolled_by_id'], ['ab_user.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['lead_id'], ['crm_lead.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sequence_id'], ['crm_sequence.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['step_id'], ['crm_sequence_step.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_crm_enrollment_due', 'crm_enrollment', ['status', 'next_run_at'], unique=False)
    op.create_index(op.f('ix_crm_enrollment_lead_id'), 'crm_enrollment', ['lead_id'], unique=False)
    op.create_index('ix_crm_enrollment_sequence', 'crm_enrollment', ['sequence_id', 'status'], unique=False)
    op.create_index('uq_crm_enrollment_running', 'crm_enrollment', ['sequence_id', 'lead_id'], unique=True, postgresql_where=sa.text("status IN ('active', 'paused')"), sqlite_where=sa.text("status IN ('active', 'paused')"))
    op.create_table('crm_suppression',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('address_hash', sa.String(length=64), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=True),
    sa.Column('reason', sa.String(length=20), nullable=False),
    sa.Column('source', sa.String(length=100), nullable=True),
    sa.Column('note', sa.String(length=500), nullable=True),
    sa.Column('lead_id', sa.Integer(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['ab_user.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['lead_id'], ['crm_lead.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('address_hash')
    )
    op.create_index(op.f('ix_crm_suppression_address'), 'crm_suppression', ['address'], unique=False)
    op.create_index(op.f('ix_crm_suppression_lead_id'), 'crm_suppression', ['lead_id'], unique=False)
    op.create_table('crm_enrollment_step',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('enrollment_id', sa.Integer(), nullable=False),
    sa.Column('step_id', sa.Integer(), nullable=False),
    sa.Column('sequence_id', sa.Integer(), nullable=False),
    sa.Column('template_id', sa.Integer(), nullable=True),
    sa.Column('message_id', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('detail', sa.String(length=300), nullable=True),
    sa.Column('links', sa.JSON(), nullable=True),
    sa.Column('ran_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('opens', sa.Integer(), nullable=False),
    sa.Column('clicked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('clicks', sa.Integer(), nullable=False),
    sa.Column('replied_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('unsubscribed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['enrollment_id'], ['crm_enrollment.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['message_id'], ['bl_message.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['sequence_id'], ['crm_sequence.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['step_id'], ['crm_sequence_step.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['template_id'], ['crm_email_template.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('enrollment_id', 'step_id', name='uq_crm_enrollment_step')
    )
    op.create_index(op.f('ix_crm_enrollment_step_message_id'), 'crm_enrollment_step', ['message_id'], unique=False)
    op.create_index('ix_crm_enrollment_step_stats', 'crm_enrollment_step', ['sequence_id', 'step_id'], unique=False)
    op.create_index(op.f('ix_crm_enrollment_step_template_id'), 'crm_enrollment_step', ['template_id'], unique=False)
    op.add_column('crm_lead', sa.Column('timezone', sa.String(length=64), nullable=True))
    # tasks made by sequences belong to a lead: an activity may have a lead instead of a customer
    with op.batch_alter_table('crm_activity', reflect_args=_ACTIVITY_FKS) as batch:
        batch.add_column(sa.Column('lead_id', sa.Integer(), nullable=True))
        batch.create_foreign_key('fk_crm_activity_lead_id', 'crm_lead', ['lead_id'], ['id'], ondelete='CASCADE')
        batch.create_index('ix_crm_activity_lead_id', ['lead_id'], unique=False)
        batch.drop_constraint('ck_crm_activity_has_customer', type_='check')
        batch.create_check_constraint('ck_crm_activity_has_customer',
                                      'contact_id IS NOT NULL OR company_id IS NOT NULL OR lead_id IS NOT NULL')


def downgrade() -> None:
    op.execute("DELETE FROM crm_activity WHERE contact_id IS NULL AND company_id IS NULL")
    with op.batch_alter_table('crm_activity', reflect_args=_ACTIVITY_FKS) as batch:
        batch.drop_constraint('ck_crm_activity_has_customer', type_='check')
        batch.create_check_constraint('ck_crm_activity_has_customer',
                                      'contact_id IS NOT NULL OR company_id IS NOT NULL')
        batch.drop_index('ix_crm_activity_lead_id')
        batch.drop_constraint('fk_crm_activity_lead_id', type_='foreignkey')
        batch.drop_column('lead_id')
    with op.batch_alter_table('crm_lead') as batch:
        batch.drop_column('timezone')
    op.drop_index(op.f('ix_crm_enrollment_step_template_id'), table_name='crm_enrollment_step')
    op.drop_index('ix_crm_enrollment_step_stats', table_name='crm_enrollment_step')
    op.drop_index(op.f('ix_crm_enrollment_step_message_id'), table_name='crm_enrollment_step')
    op.drop_table('crm_enrollment_step')
    op.drop_index(op.f('ix_crm_suppression_lead_id'), table_name='crm_suppression')
    op.drop_index(op.f('ix_crm_suppression_address'), table_name='crm_suppression')
    op.drop_table('crm_suppression')
    op.drop_index('uq_crm_enrollment_running', table_name='crm_enrollment', postgresql_where=sa.text("status IN ('active', 'paused')"), sqlite_where=sa.text("status IN ('active', 'paused')"))
    op.drop_index('ix_crm_enrollment_sequence', table_name='crm_enrollment')
    op.drop_index(op.f('ix_crm_enrollment_lead_id'), table_name='crm_enrollment')
    op.drop_index('ix_crm_enrollment_due', table_name='crm_enrollment')
    op.drop_table('crm_enrollment')
    op.drop_index(op.f('ix_crm_consent_record_lead_id'), table_name='crm_consent_record')
    op.drop_index('ix_crm_consent_record_address', table_name='crm_consent_record')
    op.drop_table('crm_consent_record')
    op.drop_index(op.f('ix_crm_sequence_step_template_id'), table_name='crm_sequence_step')
    op.drop_index('ix_crm_sequence_step_sequence', table_name='crm_sequence_step')
    op.drop_table('crm_sequence_step')
    op.drop_index(op.f('ix_crm_sequence_enroll_form_id'), table_name='crm_sequence')
    op.drop_table('crm_sequence')
    op.drop_table('crm_email_template')
