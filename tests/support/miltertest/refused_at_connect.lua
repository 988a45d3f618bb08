-- A connection that arrives while the daemon drains after SIGTERM: a
-- temporary failure at connect, so the MTA answers 4xx and keeps the mail.
dofile(DIR .. "/common.lua")

run("refused_at_connect", function()
  local conn = mt.connect(SOCKET, 1, 0.1)
  if conn == nil then
    fail("cannot connect to " .. SOCKET)
  end
  ok(mt.conninfo(conn, "client.example.net", CLIENT), "conninfo")
  expect_reply(conn, SMFIR_TEMPFAIL, "connect")
end)
