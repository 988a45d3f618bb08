-- An IPv6 client with nothing positive known: the exact fallback reply at
-- end of message (451 in defensive mode, 550 in mx6 mode), no header added.
-- -D REPLY: the whole reply as libmilter sends it ("451-4.7.26 ...\r\n451 4.7.26 ...").
dofile(DIR .. "/common.lua")

run("ipv6_fallback", function()
  local conn = sendmail_connect()
  sendmail_envelope(conn)
  ok(mt.eoh(conn), "eoh")
  expect_reply(conn, SMFIR_CONTINUE, "eoh")
  ok(mt.bodystring(conn, "Hello.\r\n"), "body")
  ok(mt.eom(conn), "eom")
  expect_reply(conn, SMFIR_REPLYCODE, "eom")
  if not mt.eom_check(conn, MT_SMTPREPLY, REPLY) then
    fail("eom: the reply is not exactly " .. REPLY)
  end
  if mt.eom_check(conn, MT_HDRINSERT) or mt.eom_check(conn, MT_HDRADD) then
    fail("eom: a refused message got a header")
  end
  ok(mt.disconnect(conn), "disconnect")
end)
