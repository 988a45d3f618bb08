-- A session that pauses -D PAUSE seconds after RCPT (the test sends the
-- daemon SIGTERM meanwhile), then finishes: the milter must still answer it.
-- -D EXPECT: "fallback" (IPv6, nothing known) or "accept".
dofile(DIR .. "/common.lua")

run("slow_session", function()
  local conn = sendmail_connect()
  sendmail_envelope(conn)
  mt.echo("slow_session: in flight")
  mt.sleep(tonumber(PAUSE))
  ok(mt.eoh(conn), "eoh")
  ok(mt.bodystring(conn, "Hello.\r\n"), "body")
  ok(mt.eom(conn), "eom")
  if EXPECT == "fallback" then
    expect_reply(conn, SMFIR_REPLYCODE, "eom")
  else
    expect_reply(conn, SMFIR_ACCEPT, "eom")
  end
  ok(mt.disconnect(conn), "disconnect")
end)
