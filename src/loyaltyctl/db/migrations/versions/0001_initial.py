"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 15:02:59.770965
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('command', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=100), nullable=True),
    sa.Column('rows', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('details', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_at', ['at'], unique=False)

    op.create_table('job_locks',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('acquired_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('members',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=True),
    sa.Column('email', sa.String(length=254), nullable=True),
    sa.Column('card_number', sa.String(length=64), nullable=True),
    sa.Column('birth_date', sa.Date(), nullable=True),
    sa.Column('joined_at', sa.DateTime(), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='active', nullable=False),
    sa.Column('referred_by_id', sa.Integer(), nullable=True),
    sa.Column('acquisition_campaign', sa.String(length=64), nullable=True),
    sa.Column('tags', sa.String(length=500), server_default='', nullable=False),
    sa.Column('tier', sa.String(length=40), nullable=True),
    sa.Column('tier_since', sa.DateTime(), nullable=True),
    sa.Column('tier_floor', sa.String(length=40), nullable=True),
    sa.Column('tier_floor_until', sa.Date(), nullable=True),
    sa.Column('balance', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('pending', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('merged_into_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['merged_into_id'], ['members.id'], ),
    sa.ForeignKeyConstraint(['referred_by_id'], ['members.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('card_number'),
    sa.UniqueConstraint('code'),
    sa.UniqueConstraint('email'),
    sa.UniqueConstraint('phone')
    )
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.create_index('ix_members_joined_at', ['joined_at'], unique=False)
        batch_op.create_index('ix_members_referred_by', ['referred_by_id'], unique=False)
        batch_op.create_index('ix_members_status', ['status'], unique=False)
        batch_op.create_index('ix_members_tier', ['tier'], unique=False)

    op.create_table('purchases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('ref', sa.String(length=100), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('occurred_at', sa.DateTime(), nullable=False),
    sa.Column('category', sa.String(length=64), nullable=True),
    sa.Column('channel', sa.String(length=64), nullable=True),
    sa.Column('refunded_amount', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('points', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('campaign', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('ref')
    )
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.create_index('ix_purchases_member_time', ['member_id', 'occurred_at', 'amount', 'refunded_amount'], unique=False)
        batch_op.create_index('ix_purchases_occurred_at', ['occurred_at'], unique=False)

    op.create_table('tier_history',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('from_tier', sa.String(length=40), nullable=True),
    sa.Column('to_tier', sa.String(length=40), nullable=True),
    sa.Column('changed_at', sa.DateTime(), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('metric_value', sa.BigInteger(), nullable=True),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('tier_history', schema=None) as batch_op:
        batch_op.create_index('ix_tier_history_member', ['member_id', 'changed_at'], unique=False)

    op.create_table('ledger_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('effective_at', sa.DateTime(), nullable=False),
    sa.Column('expires_on', sa.Date(), nullable=True),
    sa.Column('remaining', sa.BigInteger(), nullable=True),
    sa.Column('pending_until', sa.DateTime(), nullable=True),
    sa.Column('purchase_id', sa.Integer(), nullable=True),
    sa.Column('campaign', sa.String(length=64), nullable=True),
    sa.Column('item_code', sa.String(length=64), nullable=True),
    sa.Column('ref', sa.String(length=100), nullable=True),
    sa.Column('idem_key', sa.String(length=160), nullable=True),
    sa.Column('source_id', sa.Integer(), nullable=True),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], ),
    sa.ForeignKeyConstraint(['purchase_id'], ['purchases.id'], ),
    sa.ForeignKeyConstraint(['source_id'], ['ledger_entries.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idem_key')
    )
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_kind_time', ['kind', 'effective_at'], unique=False)
        batch_op.create_index('ix_ledger_member', ['member_id', 'id'], unique=False)
        batch_op.create_index('ix_ledger_open_lots', ['expires_on', 'member_id'], unique=False, sqlite_where=sa.text('remaining > 0'), postgresql_where=sa.text('remaining > 0'))
        batch_op.create_index('ix_ledger_purchase', ['purchase_id'], unique=False)

    op.create_table('allocations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('debit_id', sa.Integer(), nullable=False),
    sa.Column('lot_id', sa.Integer(), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['debit_id'], ['ledger_entries.id'], ),
    sa.ForeignKeyConstraint(['lot_id'], ['ledger_entries.id'], ),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('allocations', schema=None) as batch_op:
        batch_op.create_index('ix_alloc_debit', ['debit_id'], unique=False)
        batch_op.create_index('ix_alloc_lot', ['lot_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('allocations', schema=None) as batch_op:
        batch_op.drop_index('ix_alloc_lot')
        batch_op.drop_index('ix_alloc_debit')

    op.drop_table('allocations')
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_purchase')
        batch_op.drop_index('ix_ledger_open_lots', sqlite_where=sa.text('remaining > 0'), postgresql_where=sa.text('remaining > 0'))
        batch_op.drop_index('ix_ledger_member')
        batch_op.drop_index('ix_ledger_kind_time')

    op.drop_table('ledger_entries')
    with op.batch_alter_table('tier_history', schema=None) as batch_op:
        batch_op.drop_index('ix_tier_history_member')

    op.drop_table('tier_history')
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.drop_index('ix_purchases_occurred_at')
        batch_op.drop_index('ix_purchases_member_time')

    op.drop_table('purchases')
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_index('ix_members_tier')
        batch_op.drop_index('ix_members_status')
        batch_op.drop_index('ix_members_referred_by')
        batch_op.drop_index('ix_members_joined_at')

    op.drop_table('members')
    op.drop_table('job_locks')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_at')

    op.drop_table('audit_log')
