"""Host runtime: event outbox and deliveries, scheduled jobs and runs, scheduler nodes, message log,
inbound mail.

Revision ID: core_0002
Revises: core_0001
"""
import sqlalchemy as sa
from alembic import op

revision = "core_0002"
down_revision = "core_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bl_inbound_message',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('message_key', sa.String(length=64), nullable=False),
    sa.Column('message_id', sa.Text(), nullable=False),
    sa.Column('in_reply_to', sa.Text(), nullable=True),
    sa.Column('references', sa.JSON(), nullable=True),
    sa.Column('sender_address', sa.String(length=320), nullable=False),
    sa.Column('sender_name', sa.String(length=200), nullable=True),
    sa.Column('recipients', sa.JSON(), nullable=True),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('body_text', sa.Text(), nullable=False),
    sa.Column('body_html', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('message_key')
    )
    op.create_index(op.f('ix_bl_inbound_message_sender_address'), 'bl_inbound_message', ['sender_address'], unique=False)
    op.create_table('bl_job',
    sa.Column('id', sa.String(length=191), nullable=False),
    sa.Column('module', sa.String(length=100), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.Column('label_en', sa.String(length=200), nullable=True),
    sa.Column('trigger', sa.String(length=200), nullable=True),
    sa.Column('paused', sa.Boolean(), nullable=False),
    sa.Column('run_requested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_run_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_outcome', sa.String(length=20), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_duration_ms', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_bl_job_module'), 'bl_job', ['module'], unique=False)
    op.create_table('bl_job_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=191), nullable=False),
    sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('node', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'scheduled_at', name='uq_bl_job_run_job_scheduled')
    )
    op.create_index(op.f('ix_bl_job_run_job_id'), 'bl_job_run', ['job_id'], unique=False)
    op.create_index(op.f('ix_bl_job_run_started_at'), 'bl_job_run', ['started_at'], unique=False)
    op.create_index(op.f('ix_bl_job_run_status'), 'bl_job_run', ['status'], unique=False)
    op.create_table('bl_mailbox_state',
    sa.Column('name', sa.String(length=400), nullable=False),
    sa.Column('uidvalidity', sa.BigInteger(), nullable=True),
    sa.Column('last_uid', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('bl_message',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('to_address', sa.String(length=320), nullable=False),
    sa.Column('to_name', sa.String(length=200), nullable=True),
    sa.Column('from_address', sa.String(length=320), nullable=True),
    sa.Column('from_name', sa.String(length=200), nullable=True),
    sa.Column('reply_to', sa.String(length=320), nullable=True),
    sa.Column('subject', sa.String(length=998), nullable=False),
    sa.Column('body_text', sa.Text(), nullable=False),
    sa.Column('body_html', sa.Text(), nullable=True),
    sa.Column('headers', sa.JSON(), nullable=True),
    sa.Column('message_id', sa.String(length=255), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('source', sa.String(length=100), nullable=True),
    sa.Column('provider', sa.String(length=50), nullable=True),
    sa.Column('provider_message_id', sa.String(length=255), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claim', sa.String(length=32), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key'),
    sa.UniqueConstraint('message_id')
    )
    op.create_index(op.f('ix_bl_message_channel'), 'bl_message', ['channel'], unique=False)
    op.create_index('ix_bl_message_due', 'bl_message', ['status', 'next_attempt_at'], unique=False)
    op.create_index(op.f('ix_bl_message_provider'), 'bl_message', ['provider'], unique=False)
    op.create_index(op.f('ix_bl_message_sent_at'), 'bl_message', ['sent_at'], unique=False)
    op.create_index(op.f('ix_bl_message_source'), 'bl_message', ['source'], unique=False)
    op.create_index(op.f('ix_bl_message_to_address'), 'bl_message', ['to_address'], unique=False)
    op.create_table('bl_outbox_event',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=150), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_bl_outbox_event_name'), 'bl_outbox_event', ['name'], unique=False)
    op.create_index(op.f('ix_bl_outbox_event_occurred_at'), 'bl_outbox_event', ['occurred_at'], unique=False)
    op.create_table('bl_scheduler_node',
    sa.Column('node', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('node')
    )
    op.create_index(op.f('ix_bl_scheduler_node_heartbeat_at'), 'bl_scheduler_node', ['heartbeat_at'], unique=False)
    op.create_table('bl_event_delivery',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('subscriber', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claim', sa.String(length=32), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['bl_outbox_event.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id', 'subscriber', name='uq_bl_event_delivery_event_subscriber')
    )
    op.create_index('ix_bl_event_delivery_due', 'bl_event_delivery', ['status', 'next_attempt_at'], unique=False)
    op.create_index(op.f('ix_bl_event_delivery_event_id'), 'bl_event_delivery', ['event_id'], unique=False)
    op.create_index(op.f('ix_bl_event_delivery_subscriber'), 'bl_event_delivery', ['subscriber'], unique=False)
    op.create_table('bl_inbound_attachment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('content_type', sa.String(length=255), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['bl_inbound_message.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_bl_inbound_attachment_message_id'), 'bl_inbound_attachment', ['message_id'], unique=False)
        # APScheduler's job store (same layout as apscheduler.jobstores.sqlalchemy creates).
    op.create_table('bl_scheduler_jobs',
    sa.Column('id', sa.Unicode(length=191), nullable=False),
    sa.Column('next_run_time', sa.Float(precision=25), nullable=True),
    sa.Column('job_state', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_bl_scheduler_jobs_next_run_time', 'bl_scheduler_jobs', ['next_run_time'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_bl_scheduler_jobs_next_run_time', table_name='bl_scheduler_jobs')
    op.drop_table('bl_scheduler_jobs')

    op.drop_index(op.f('ix_bl_inbound_attachment_message_id'), table_name='bl_inbound_attachment')
    op.drop_table('bl_inbound_attachment')
    op.drop_index(op.f('ix_bl_event_delivery_subscriber'), table_name='bl_event_delivery')
    op.drop_index(op.f('ix_bl_event_delivery_event_id'), table_name='bl_event_delivery')
    op.drop_index('ix_bl_event_delivery_due', table_name='bl_event_delivery')
    op.drop_table('bl_event_delivery')
    op.drop_index(op.f('ix_bl_scheduler_node_heartbeat_at'), table_name='bl_scheduler_node')
    op.drop_table('bl_scheduler_node')
    op.drop_index(op.f('ix_bl_outbox_event_occurred_at'), table_name='bl_outbox_event')
    op.drop_index(op.f('ix_bl_outbox_event_name'), table_name='bl_outbox_event')
    op.drop_table('bl_outbox_event')
    op.drop_index(op.f('ix_bl_message_to_address'), table_name='bl_message')
    op.drop_index(op.f('ix_bl_message_source'), table_name='bl_message')
    op.drop_index(op.f('ix_bl_message_sent_at'), table_name='bl_message')
    op.drop_index(op.f('ix_bl_message_provider'), table_name='bl_message')
    op.drop_index('ix_bl_message_due', table_name='bl_message')
    op.drop_index(op.f('ix_bl_message_channel'), table_name='bl_message')
    op.drop_table('bl_message')
    op.drop_table('bl_mailbox_state')
    op.drop_index(op.f('ix_bl_job_run_status'), table_name='bl_job_run')
    op.drop_index(op.f('ix_bl_job_run_started_at'), table_name='bl_job_run')
    op.drop_index(op.f('ix_bl_job_run_job_id'), table_name='bl_job_run')
    op.drop_table('bl_job_run')
    op.drop_index(op.f('ix_bl_job_module'), table_name='bl_job')
    op.drop_table('bl_job')
    op.drop_index(op.f('ix_bl_inbound_message_sender_address'), table_name='bl_inbound_message')
    op.drop_table('bl_inbound_message')
