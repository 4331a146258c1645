(function(){var t=document.getElementById('board');var hs=t.tHead.rows[0].cells;
function val(td){var v=td.getAttribute('data-value');return v===''||v===null?null:parseFloat(v);}
function sortBy(key,dir){var k=-1;for(var i=0;i<hs.length;i++){if(hs[i].getAttribute('data-key')===key)k=i;}
if(k<0)return;var rows=Array.prototype.slice.call(t.tBodies[0].rows);
rows.sort(function(a,b){var x=val(a.cells[k]),y=val(b.cells[k]);if(x===null&&y===null)return 0;
if(x===null)return 1;if(y===null)return -1;return dir==='asc'?x-y:y-x;});
rows.forEach(function(r){t.tBodies[0].appendChild(r);});t.setAttribute('data-sorted',key+':'+dir);}
for(var i=0;i<hs.length;i++){hs[i].addEventListener('click',function(){var key=this.getAttribute('data-key');
var cur=t.getAttribute('data-sorted')||'';var dir=cur===key+':desc'?'asc':'desc';sortBy(key,dir);});}
var m=/sort=([^&]+)(?:&dir=(asc|desc))?/.exec(decodeURIComponent(location.hash||''));
if(m)sortBy(m[1],m[2]||'desc');})();
