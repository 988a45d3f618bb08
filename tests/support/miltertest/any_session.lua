-- One session to its end, whatever the milter decides: for tests that read the
-- decision back elsewhere (the metrics through Prometheus, the log). An IPv4
-- session ends at end of headers (accepted unread); a judged one at end of
-- message, accepted or refused with a reply.
dofile(DIR .. "/common.lua")

run("any_session", function()
  local conn = sendmail_connect()
  sendmail_envelope(conn)
  ok(mt.eoh(conn), "eoh")
  if mt.getreply(conn) == SMFIR_CONTINUE then
    ok(mt.bodystring(conn, "Hello.\r\n"), "body")
    ok(mt.eom(conn), "eom")
    local got = mt.getreply(conn)
    if got ~= SMFIR_ACCEPT and got ~= SMFIR_REPLYCODE then
      fail("eom: milter replied " .. string.char(got))
    end
  end
  ok(mt.disconnect(conn), "disconnect")
end)
