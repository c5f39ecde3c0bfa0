-- Live event streams need nothing in SQLite: a SQLite store tells the subscriptions of its own process after
-- each commit (history._notify.Hub.notify_appended), and other processes find new events by polling. This
-- migration keeps the schema versions of the two dialects in step (PostgreSQL's adds the NOTIFY trigger).
SELECT 1;
